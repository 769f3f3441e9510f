"""The scheduler: catalogs, the clip planner, the parameter sampler, enqueue."""

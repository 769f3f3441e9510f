"""The embedded single-machine default: SQLite database and SQLite-backed broker, no servers."""

import json
import sqlite3

from farm.core.celery_app import RENDER_TASK


def test_builtin_catalog_enqueues_on_the_embedded_default(farm):
    assert farm("catalog", "import", "builtin").code == 0
    listed = json.loads(farm("catalog", "list", "--json").out)
    assert {row["catalog"] for row in listed} == {"builtin"} and {row["split"] for row in listed} == {
        "train",
        "test",
    }
    plan = json.loads(farm("enqueue", "--sequences", "builtin_all", "--dry-run", "--json").out)
    assert plan["clips"]["train"] > 0 and plan["clips"]["test"] > 0
    assert plan["new_clips"] == plan["clips"]["total"]  # what it would add; it adds nothing (below)

    result = json.loads(farm("enqueue", "--sequences", "builtin_all", "--limit", "5", "--json").out)
    assert result["new_clips"] == 5
    with sqlite3.connect("farm-broker.db") as broker:
        bodies = [
            json.loads(row[0]) for row in broker.execute("SELECT payload FROM kombu_message WHERE visible")
        ]
    assert len(bodies) == 5 and {b["headers"]["task"] for b in bodies} == {RENDER_TASK}
    with sqlite3.connect("farm.db") as conn:
        specs = [json.loads(row[0]) for row in conn.execute("SELECT spec FROM clips")]
    assert all(s["texture"].startswith("builtin:texture/") and s["body_model"] == "free" for s in specs)

    status = json.loads(farm("status", "--json").out)
    assert status["clips"]["queued"] == 5 and status["target_frames"] == 6_536_752
    assert (
        json.loads(farm("enqueue", "--sequences", "builtin_all", "--limit", "5", "--json").out)["new_clips"]
        == 0
    )

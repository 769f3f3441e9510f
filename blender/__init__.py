"""The renderer: the only package that imports bpy. It turns a plain render job into files."""

"""QEMU's object model (QOM): types, objects, properties and paths."""

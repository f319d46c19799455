"""Monitors: QMP (JSON) and HMP (human) front ends to the object tree."""

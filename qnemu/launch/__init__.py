"""Launching runs: the run plan (`plan.py`), run directories (`rundir.py`), building one
process from the plan (`processes.py`), starting and stopping them all (`launcher.py`),
the live view (`live.py`), faults (`faults.py`) and the launcher's MQTT presence
(`mqtt.py`). Import the submodules directly (the launcher uses the
client, which uses the plan)."""

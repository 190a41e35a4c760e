"""Launching runs: the run plan (`plan.py`), run directories (`rundir.py`), building one
process from the plan (`processes.py`), starting and stopping them all (`launcher.py`),
and the live view (`live.py`). Import the submodules directly (the launcher uses the
client, which uses the plan)."""

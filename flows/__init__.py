"""The wiring: Prefect flows made of the tasks in `tasks/`, and the `mlcycle` command line."""

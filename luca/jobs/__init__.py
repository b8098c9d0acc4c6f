"""Background jobs: queues (queue.py), the jobs themselves (tasks.py)."""

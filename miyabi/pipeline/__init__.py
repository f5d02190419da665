"""From a task to verified work: pool instances in git worktrees, the repository's
own checks, feedback rounds, and what a pass publishes (a pull request, or a local
merge behind the checks)."""

"""Work: the task store, routing and scheduling, telling agents (dispatch), GitHub
intake, jobs, and the engine that wires them for the controller."""

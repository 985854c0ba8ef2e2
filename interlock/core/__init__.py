"""The gradient contract: strategies (gradient plans), schedules, the component worker and its backward passes."""

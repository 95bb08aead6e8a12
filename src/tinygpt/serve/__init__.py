"""`tinygpt serve`: an OpenAI-compatible HTTP server and a chat page for one trained run."""

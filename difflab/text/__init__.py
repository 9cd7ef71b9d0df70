"""Text conditioning: a frozen sentence encoder for prompts."""

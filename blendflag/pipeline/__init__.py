"""The stages over one context, the comparison's inputs and its statistics."""

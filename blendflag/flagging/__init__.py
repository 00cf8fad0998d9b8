"""Blend flagging: the flagger and detector interfaces, evaluation and its metrics."""

"""Training configs of the built-in flaggers (package data; ``Flagger.training_config``)."""

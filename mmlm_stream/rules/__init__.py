"""Event rule types, one file each: the config model, the evaluation and the sentence of
every ``type`` that ``events.rules`` accepts (``registry.py`` lists them)."""

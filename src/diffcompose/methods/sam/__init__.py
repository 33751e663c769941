"""The ``sam`` engine: Segment Anything (Kirillov et al., 2023) for ``segment``, prompted by points and/or a box."""

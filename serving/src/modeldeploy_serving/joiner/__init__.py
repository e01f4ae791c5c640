"""The label joiner: predictions in, labels in (days later), effectiveness statistics out."""

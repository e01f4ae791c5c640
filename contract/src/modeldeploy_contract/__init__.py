"""The typed contract between the modeldeploy operator and the processes it configures.

The operator builds these models and renders them into a pod's environment; the model server and
the router read the same models back with pydantic-settings. One definition, so neither side
parses the other's strings its own way.
"""

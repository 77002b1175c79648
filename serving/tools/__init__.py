"""Tools around the runtime: the demo, the rollback drill, the offline report and Helm chart generation.

Nothing in the runtime (config, translation, router, replicas, controller) imports from here.
"""

"""Container images of the server and the agent (``make images``) and the scale-out stack.

``containers.base`` builds a local base image when no registry is reachable, ``containers.build``
builds the images, ``containers.stack`` brings ``compose.yaml`` up. docs/containers.md has the
figures.
"""

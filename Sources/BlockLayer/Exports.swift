// BlockLayer: the library's front door. The graph (BlockGraph) cannot know the formats that are
// built on it, so what needs every format — the registry, and opening an image with all of them
// — lives here, above them; a user imports this one module and gets the rest with it.
@_exported import BlockGraph
@_exported import Qcow2

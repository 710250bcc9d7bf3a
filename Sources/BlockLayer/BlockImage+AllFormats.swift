// BlockImage+AllFormats: opening an image with every format of the build, so that a library
// user who opens a qcow2 image gets one, without listing formats.

extension BlockImage {
    /// Opens `path` as BlockGraph's `open` does, probing for (or, with `options.format`, using)
    /// any format of the build.
    public static func open(_ path: String, options: OpenOptions = OpenOptions()) throws(BlockError) -> BlockImage {
        try open(path, options: options, formats: BlockFormats.all)
    }
}

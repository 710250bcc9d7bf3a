// The benchmarks' scenarios name their formats ("raw", "qcow2"); images are made through the
// format registry, as blk create makes them, never by branching on the name.
import BlockLayer

/// Makes `path` a new image of `format`, which must be a format of the build.
func createBenchImage(_ format: String, at path: String, _ options: ImageCreateOptions) throws(BlockError) {
    guard let driver = BlockFormats.named(format) else { throw BlockError(.unsupported, "Unknown file format '\(format)'") }
    try driver.create(at: path, options: options)
}

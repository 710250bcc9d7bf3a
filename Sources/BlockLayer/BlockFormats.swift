// BlockFormats: every format in this build, the one list of them (QEMU's list of block drivers).
// Opening, probing, creating and converting all look formats up here.

/// The formats of the build, in one place, so that adding a format is one line and no caller
/// keeps a list of its own.
public enum BlockFormats {
    /// In probing order: qcow2 recognises its magic; raw claims any bytes, so it comes last.
    public static let all: [any BlockFormat.Type] = [Qcow2Format.self, RawFormat.self]

    /// The format called `name` ("raw", "qcow2"), if the build has it.
    public static func named(_ name: String) -> (any BlockFormat.Type)? {
        all.first { $0.formatName == name }
    }
}

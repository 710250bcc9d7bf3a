// FormatSpecificInfo: what a format says about an image beyond its size (QEMU's BlockDriverInfo,
// the backing fields of ImageInfo, and ImageInfoSpecific). The format-specific part is a tree of
// named fields, as QEMU's is a QAPI object that qemu-img prints generically: a caller prints it
// as text or JSON without knowing the format, and a format adds a field without the caller
// changing.
/// What `blk info` prints beyond the size, as one value whatever the format, so the CLI never
/// asks a driver type.
public struct FormatSpecificInfo: Sendable, Hashable {
    /// The allocation unit, for formats that have one.
    public var clusterSize: Int?
    /// The backing file's name as the image records it.
    public var backingFile: String?
    /// That name as opened: a relative name joined to the image's folder as given (qemu-img's
    /// full-backing-filename).
    public var fullBackingFile: String?
    /// The backing image's format as the image records it; nil when probed.
    public var backingFormat: String?
    /// Metadata left unfinished by a crash (qcow2's dirty bit, with lazy refcounts).
    public var isDirty: Bool
    /// qemu-img's "format-specific" data, in the order qemu-img prints it; names are its JSON
    /// names.
    public var fields: [Field]

    /// One named entry of the format-specific tree.
    public struct Field: Sendable, Hashable {
        /// The JSON name, which the human output turns into qemu-img's words.
        public var name: String
        /// The entry's value: a scalar, a list or a nested object.
        public var value: Value

        /// An entry named as qemu-img's JSON names it.
        public init(_ name: String, _ value: Value) {
            self.name = name
            self.value = value
        }
    }

    /// The value kinds of a QAPI object, all that qemu-img's generic printer has to handle.
    public indirect enum Value: Sendable, Hashable {
        case string(String)
        case integer(Int64)
        case boolean(Bool)
        case list([Value])
        case object([Field])
    }

    /// Information with every part optional, since formats have different parts.
    public init(clusterSize: Int? = nil, backingFile: String? = nil, fullBackingFile: String? = nil, backingFormat: String? = nil,
                isDirty: Bool = false, fields: [Field] = []) {
        self.clusterSize = clusterSize
        self.backingFile = backingFile
        self.fullBackingFile = fullBackingFile
        self.backingFormat = backingFormat
        self.isDirty = isDirty
        self.fields = fields
    }
}

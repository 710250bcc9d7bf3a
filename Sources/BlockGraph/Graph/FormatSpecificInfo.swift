// FormatSpecificInfo: what a format says about an image beyond its size (QEMU's BlockDriverInfo,
// the backing fields of ImageInfo, and ImageInfoSpecific). The format-specific part is a tree of
// named fields, as QEMU's is a QAPI object that qemu-img prints generically: a caller prints it
// as text or JSON without knowing the format, and a format adds a field without the caller
// changing.
public struct FormatSpecificInfo: Sendable, Hashable {
    /// The allocation unit, for formats that have one.
    public var clusterSize: Int?
    /// The backing file's name as the image records it.
    public var backingFile: String?
    /// That name as opened: a relative name joined to the image's folder as given (qemu-img's
    /// full-backing-filename).
    public var fullBackingFile: String?
    public var backingFormat: String?
    /// Metadata left unfinished by a crash (qcow2's dirty bit, with lazy refcounts).
    public var isDirty: Bool
    /// qemu-img's "format-specific" data, in the order qemu-img prints it; names are its JSON
    /// names.
    public var fields: [Field]

    public struct Field: Sendable, Hashable {
        public var name: String
        public var value: Value

        public init(_ name: String, _ value: Value) {
            self.name = name
            self.value = value
        }
    }

    public indirect enum Value: Sendable, Hashable {
        case string(String)
        case integer(Int64)
        case boolean(Bool)
        case list([Value])
        case object([Field])
    }

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

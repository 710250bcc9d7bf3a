// FormatProbe: which format an image is, from its first bytes (QEMU's bdrv_probe_all), and
// the formats this build can open.
import BlockLocking

public enum FormatProbe {
    /// qcow2's magic, "QFI\xfb" (docs/interop/qcow2.rst, header bytes 0–3, big-endian).
    static let qcow2Magic: [UInt8] = [0x51, 0x46, 0x49, 0xfb]

    /// The formats `BlockImage.open` can build a node for.
    public static let openable: Set<String> = ["raw"]

    /// The format the bytes at the start of an image say it is; "raw" when none claims them.
    public static func format(ofHeader header: [UInt8]) -> String {
        header.starts(with: qcow2Magic) ? "qcow2" : "raw"
    }
}

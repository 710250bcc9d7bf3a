// Qcow2Corruption: what happens when metadata is found inconsistent while the image is in use.
// As QEMU's qcow2_signal_corruption: an image open read-write gets the corrupt bit (incompatible
// feature bit 1) set on disk at once, so no later open — ours or QEMU's — writes to it before
// `check -r all`; further writes through this open are refused. An image open read-only is left
// untouched and only the request fails.
import BlockGraph

extension Qcow2Driver {
    /// The error to throw for `message`, after marking the image corrupt if this open may write.
    func signalCorruption(_ message: String) -> BlockError {
        guard writable.load(ordering: .acquiring), holdsWrite.load(ordering: .acquiring), header.version >= 3,
              corruptionMarked.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return BlockError(.corrupt, "qcow2: \(message)")
        }
        do throws(BlockError) {
            try file.during(.headerUpdate) { () throws(BlockError) in
                try writeBigEndian(try incompatibleFeaturesOnDisk() | Qcow2Header.corruptBit, at: 72)
                try file.driver.flush()
            }
        } catch {
            return BlockError(.corrupt, "qcow2: \(message); marking the image as corrupt failed too: \(error.message)")
        }
        return BlockError(.corrupt, "qcow2: Marking image as corrupt: \(message); further corruption events will be suppressed")
    }

    /// The incompatible feature bits as the file has them now: this open may have set the
    /// corrupt bit or cleared the dirty bit since the header was read.
    func incompatibleFeaturesOnDisk() throws(BlockError) -> UInt64 {
        try Self.readBytes(file, at: 72, count: 8).bigEndian(UInt64.self, at: 0)
    }

    func refuseWritesIfCorrupt() throws(BlockError) {
        if corruptionMarked.load(ordering: .acquiring) {
            throw BlockError(.corrupt, "qcow2: the image was marked corrupt; repair it with blk check -r all before writing")
        }
    }

    /// The mapping of one L2 entry, with corruption signalled rather than only thrown.
    func checkedMapping(ofEntry entry: UInt64, cluster: UInt64) throws(BlockError) -> ClusterMapping {
        do throws(BlockError) {
            let mapping = try mapping(ofEntry: entry, cluster: cluster)
            try checkDataFileMapping(mapping, cluster: cluster)
            return mapping
        } catch {
            throw signalCorruption(String(error.message.dropFirst("qcow2: ".count)))
        }
    }
}

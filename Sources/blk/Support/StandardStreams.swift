// Standard streams written and read whole through their descriptors, as FileHandle would.
import Glibc

/// Writes all of `bytes` to `descriptor`, retrying short writes; gives up on an error (a closed
/// pipe: there is nobody left to tell).
func writeAll(_ descriptor: Int32, _ bytes: some Collection<UInt8>) {
    Array(bytes).withUnsafeBytes { buffer in
        var done = 0
        while done < buffer.count {
            let count = write(descriptor, buffer.baseAddress! + done, buffer.count - done)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            done += count
        }
    }
}

func writeStandardError(_ text: String) { writeAll(STDERR_FILENO, text.utf8) }
func writeStandardOutput(_ bytes: some Collection<UInt8>) { writeAll(STDOUT_FILENO, bytes) }

/// Everything `descriptor` gives until its end.
func readToEnd(_ descriptor: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { return bytes }
        bytes += chunk[0..<count]
    }
}

// `-r RATE` of `blk commit` and `--rate-limit RATE` of `blk convert` (qemu-img's `-r`; blk's `-r`
// is --read-only wherever an image is opened), as qemu-img takes it: bytes per second with
// k/M/G/T suffixes, 0 for no limit, anything else refused in qemu-img's words (exit 64).
import ArgumentParser
import BlockCLI
import BlockLayer

/// The copy's limit `text` asks for; nil without one.
func rateLimit(_ text: String?) throws -> RateLimit? {
    guard let text else { return nil }
    guard let bytes = ByteCount.parse(text) else {
        throw ValidationError("Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for\n"
                              + "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
    }
    return RateLimit(bytesPerSecond: bytes)
}

// DescriptorReplacement: the calls a file driver's reopen needs that Swift's Glibc module hides
// behind _GNU_SOURCE: O_DIRECT for opening around the page cache, and dup3(2), which puts a new
// open file description onto a descriptor's number in one step.
import CLinuxIO
import SystemPackage

extension FileDescriptor.OpenOptions {
    /// O_DIRECT: transfers go around the page cache, with offsets, lengths and buffers aligned to
    /// the device's logical block size.
    public static var direct: FileDescriptor.OpenOptions { FileDescriptor.OpenOptions(rawValue: blk_o_direct()) }
}

extension FileDescriptor {
    /// Makes this descriptor's number refer to `source`'s open file description (dup3 with
    /// O_CLOEXEC): the number is never free in between, so a request under way on it never
    /// reaches another file, and no child process inherits it.
    public func replaceDescription(with source: FileDescriptor) -> Result<Void, SystemCallError> {
        valueOrErrno("dup3", { blk_dup3_cloexec(source.rawValue, rawValue) }).map { _ in () }
    }
}

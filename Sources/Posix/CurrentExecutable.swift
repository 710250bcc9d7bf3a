// currentExecutable: where the running program's file is, as the kernel knows it (/proc/self/exe,
// symlinks resolved), for finding the programs installed beside it — blk-serve beside blk, blk
// as sanlock's fence helper — whatever name or link it was started by.
import Glibc
import SystemPackage

/// The running executable's absolute path.
package func currentExecutable() -> Result<String, Errno> {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard length > 0 else { return .failure(.current) }
    return .success(String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

/// The folder the running executable is in.
package func currentExecutableFolder() -> Result<String, Errno> {
    currentExecutable().map { path in String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
}

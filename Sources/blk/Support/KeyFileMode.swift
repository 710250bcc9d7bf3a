// warnIfExposed: as ssh does for a private key, a key or passphrase file that its group or
// other users may read, write or run is named on stderr with its mode — the key still works (a
// refusal would break a setup that shares a key through a group on purpose), but whoever can
// read it can open the state, so the owner should know.
import BlockCLI
import Glibc
import Posix

/// Warns when `path` (followed as the read follows it) grants its group or others any access.
func warnIfExposed(keyFile path: String) {
    var status = stat()
    guard stat(path, &status) == 0, status.st_mode & 0o077 != 0 else { return }
    let mode = formatted("%04o", status.st_mode & 0o7777)
    printWarning("the key file '\(path)' has mode \(mode): users other than its owner may read or change it (chmod 600 it)")
}

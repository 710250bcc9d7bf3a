// ExitStatus: the sysexits codes of interface.md §3, and which one each BlockError ends with.
import BlockLayer

package enum ExitStatus {
    package static let failure: Int32 = 1
    package static let usage: Int32 = 64
    package static let dataError: Int32 = 65
    package static let notFound: Int32 = 66
    package static let unsupported: Int32 = 69
    package static let ioError: Int32 = 74
    package static let tryAgain: Int32 = 75
    package static let keyProblem: Int32 = 77
}

extension BlockError {
    package var exitStatus: Int32 {
        switch code {
        case .conflict, .timedOut, .stale: ExitStatus.tryAgain
        case .unsupported, .notSupportedByFormat, .leaseUnavailable: ExitStatus.unsupported
        case .notFound: ExitStatus.notFound
        case .corrupt: ExitStatus.dataError
        case .invalidRequest: ExitStatus.usage
        case .ioError, .noSpace, .lockLost: ExitStatus.ioError
        default: ExitStatus.failure
        }
    }
}

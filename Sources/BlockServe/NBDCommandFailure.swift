// NBDCommandFailure: why a request failed, as the error value its reply carries and words for
// the log and for structured error chunks.
import BlockLayer
import NBD

/// A request's failure: the reply's error value and a message.
public struct NBDCommandFailure: Error, Sendable {
    /// The error value sent.
    public var code: NBDErrorCode
    /// What went wrong, for people.
    public var message: String

    /// A failure with its error value.
    public init(_ code: NBDErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    /// A block-layer failure as the spec's nearest error value: EPERM for a write refused as
    /// read-only, ENOSPC for a full device, EINVAL for a request the image refuses, ENOTSUP for
    /// what the format cannot do (a fast zero that would be slow), else EIO.
    public init(_ error: BlockError) {
        let code: NBDErrorCode = switch error.code {
        case .readOnly: .permission
        case .noSpace: .noSpace
        case .invalidRequest: .invalid
        case .notSupportedByFormat: .notSupported
        default: .io
        }
        self.init(code, error.message)
    }
}

// NBDMagic: the fixed numbers that open each kind of NBD message (doc/proto.md of the NBD
// project), so a peer can tell a frame from garbage before trusting any length in it.

/// The magic numbers of the NBD protocol.
public enum NBDMagic {
    /// "NBDMAGIC": the first 8 bytes a server sends.
    public static let server: UInt64 = 0x4e42_444d_4147_4943
    /// "IHAVEOPT": after the server magic in newstyle negotiation, and before every option.
    public static let option: UInt64 = 0x4948_4156_454f_5054
    /// Before every reply to an option.
    public static let optionReply: UInt64 = 0x0003_e889_0455_65a9
    /// Before every transmission request.
    public static let request: UInt32 = 0x2560_9513
    /// Before a simple reply.
    public static let simpleReply: UInt32 = 0x6744_6698
    /// Before each chunk of a structured reply.
    public static let structuredReply: UInt32 = 0x668e_33ef
}

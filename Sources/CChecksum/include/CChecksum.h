// CChecksum: CRC32C (Castagnoli, iSCSI's polynomial 0x1EDC6F41, reflected 0x82F63B78) with the
// SSE4.2 crc32 instruction when the CPU has it, and a byte-table loop when it does not.
#ifndef CCHECKSUM_H
#define CCHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/// Continues a CRC32C over `count` bytes: start with 0, feed the previous result to go on.
/// Pre- and post-inversion are done inside, so crc(a ‖ b) = blk_crc32c(blk_crc32c(0, a), b).
uint32_t blk_crc32c(uint32_t crc, const void *bytes, size_t count);

/// The same with the byte-table loop only: the baseline the benchmark compares against.
uint32_t blk_crc32c_table(uint32_t crc, const void *bytes, size_t count);

/// Whether blk_crc32c uses the crc32 instruction on this CPU.
int blk_crc32c_hardware(void);

#endif

import Linea
import LineaCUDA
import Testing

/// The launch plan of the chunked kernels (no GPU needed): the shapes measured on the H100 in README.md.
@Suite struct CUDAChunkedPlanTests {
    let sms = 132  // H100

    func shape(_ B: Int, _ T: Int) -> CUDAChunkedShape {
        CUDAChunkedShape(batch: B, length: T, heads: 16, keyDim: 128, valueDim: 128)
    }

    @Test func scalarDecaysRunOneBlockPerHeadAndCutLongSequences() {
        let short = CUDAChunked.Plan(.linearAttention, shape(16, 2048), multiprocessors: sms, valueBlock: nil)
        #expect(short.valueBlock == 128 && short.segments == 1 && short.scratchBytes == 0)
        // B*H = 16 blocks: cut into 16 segments of 32 chunks, about two waves; end states [B*P,H,K,V] + gates [B*P,H].
        let long = CUDAChunked.Plan(.simpleGLA, shape(1, 32768), multiprocessors: sms, valueBlock: nil)
        #expect(long.valueBlock == 128 && long.segments == 16 && long.segmentChunks == 32)
        #expect(long.scratchBytes == 16 * 16 * 128 * 128 * 4 + 16 * 16 * 4)
        // B*H = 64 blocks: an uneven cut, 4 segments of 16 chunks and a last one of 64 (dispatched first), rather than
        // 4 of 32: the same walk in the model, half the end-state pass.
        let mid = CUDAChunked.Plan(.retention, shape(4, 8192), multiprocessors: sms, valueBlock: nil)
        #expect(mid.segments == 5 && mid.segmentChunks == 16 && mid.lastSegmentChunks == 64)
        #expect(CUDAChunked.Plan.cutCost(per: 16, segments: 5, chunks: 128, blocks: 64, sms: sms) == 64 + 0.6 * 16)
        #expect(CUDAChunked.Plan.cutCost(per: 32, segments: 4, chunks: 128, blocks: 64, sms: sms) == 64 + 0.6 * 32)
        // A forced V block is kept; short sequences are never cut.
        let forced = CUDAChunked.Plan(.linearAttention, shape(1, 256), multiprocessors: sms, valueBlock: 64)
        #expect(forced.valueBlock == 64 && forced.segments == 1)
    }

    @Test func deltaRulesTakeSixtyFourColumnsAndCutLongSequencesIntoAboutOneWave() {
        let mid = CUDAChunked.Plan(.gatedDeltaRule, shape(4, 8192), multiprocessors: sms, valueBlock: nil)
        #expect(mid.valueBlock == 64 && mid.segments == 1)  // 128 blocks of 64 columns
        // 32 blocks of 64 columns: cut into 8 segments of 64 chunks (256 blocks, two per SM); w bf16, u fp32, then the
        // segment end states [B*P,H,K,V] and transitions [B*P,H,K,K].
        let long = CUDAChunked.Plan(.deltaRule, shape(1, 32768), multiprocessors: sms, valueBlock: nil)
        #expect(long.valueBlock == 64 && long.segments == 8 && long.segmentChunks == 64)
        #expect(long.scratchBytes == 32768 * 16 * (128 * 2 + 128 * 4) + 2 * 8 * 16 * 128 * 128 * 4)
        // Fewer than 8 chunks are never cut; a forced V block is ignored (the delta kernels take 64 columns).
        let short = CUDAChunked.Plan(.deltaRule, shape(1, 448), multiprocessors: sms, valueBlock: 32)
        #expect(short.valueBlock == 64 && short.segments == 1)
    }
}

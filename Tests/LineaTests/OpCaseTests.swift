import Foundation
import Linea
import Testing

/// The op-case table on the CPU: every form of every family on every case against its Float64 reference, as
/// `linea verify` runs it (the GPU side is CUDAOpCaseTests).
@Suite struct OpCaseTests {
    @Test(arguments: OpFamilies.all.map(\.name))
    func everyCPUFormMatchesTheReference(_ name: String) throws {
        let family = try OpFamilies.named(name)
        for (index, c) in family.cases.enumerated() {
            for form in family.forms(of: c, on: .cpu) {
                let check = try family.check(c, form: form, on: .cpu, dtype: .float32, seed: UInt64(1 + 10 * index))
                #expect(check.passed, "\(name) \(form) \(c.label): \(check.errors.map { "\($0.name) \($0.stats)" })")
            }
        }
    }

    @Test func everyFamilyHasCasesAndADefaultForm() throws {
        for family in OpFamilies.all {
            #expect(!family.cases.isEmpty, "\(family.name)")
            #expect(!(family.forms(on: .cpu) + family.forms(on: .cuda(0))).isEmpty, "\(family.name)")
            for form in family.forms(on: .cpu) + family.forms(on: .cuda(0)) {
                #expect(throws: Never.self, "\(family.name) \(form)") { try family.check(form: form, options: OpOptions()) }
            }
        }
        #expect(throws: LineaError.self) { try OpFamilies.named("nope") }
    }

    /// A case the reference and a form disagree on fails: the harness is not vacuous (a wrong scale in the form).
    @Test func aWrongFormFailsItsCheck() throws {
        let family = RecurrenceFamily(.gatedDeltaRule)
        var c = family.cases[3]
        let good = try family.check(c, form: "chunked", on: .cpu, dtype: .float32, seed: 1)
        #expect(good.passed)
        c.options.scale = 0.5  // the reference and the form both see it: still equal
        #expect(try family.check(c, form: "recurrent", on: .cpu, dtype: .float32, seed: 1).passed)
        let x = try c.makeInputs(1)
        var wrong = c.options
        wrong.scale = 0.25
        let got = try family.run("chunked", family.upload(x, form: "chunked", dtype: .float32, on: .cpu), options: wrong)
        let want = try family.reference(x, options: c.options)
        #expect(ErrorStats(try got["o"]!.host(), want["o"]!).relativeRMS > 0.1)
    }

    /// The step form leaves its inputs alone: the initial state it starts from is copied, not updated in place.
    @Test func theStepFormDoesNotWriteItsInitialState() throws {
        let family = RecurrenceFamily(.deltaRule)
        let x = try family.cases[1].makeInputs(3)
        let inputs = try family.upload(x, form: "step", dtype: .float32, on: .cpu)
        _ = try family.run("step", inputs, options: OpOptions())
        #expect(try inputs["initial_state"]!.host() == x["initial_state"]!)
    }
}

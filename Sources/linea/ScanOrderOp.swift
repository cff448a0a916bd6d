import ArgumentParser
import Foundation
import Linea

/// `linea op scan_order`: a scan order's permutations and inverses, written as I64 tensors.
enum ScanOrderOp {
    /// The op's name on the command line.
    static let name = "scan_order"
}

extension OpCommand {
    /// `--order` and `--grid` as scan_order needs them; usage errors name the option. O(grid).
    func validateScanOrder() throws {
        guard let order else { throw ValidationError("--order: expected one of \(ScanOrderKind.allCases.map(\.rawValue).joined(separator: ", ")) for scan_order, got none") }
        guard ScanOrderKind(rawValue: order) != nil else {
            throw validationErrorList(argument: "--order", got: order, known: ScanOrderKind.allCases.map(\.rawValue))
        }
        guard let grid else { throw ValidationError("--grid: expected 2 or 3 comma-separated sizes for scan_order (e.g. 16,16), got none") }
        do { _ = try ScanOrder.parseGrid(grid) } catch let error as LineaError { throw ValidationError("\(error)") }
        if inputs != nil || form != nil { throw ValidationError("--inputs, --form: not read by scan_order (it writes perm and inverse from --order and --grid)") }
    }

    /// Writes `perm` and `inverse` `[scans, tokens]` (I64; one row per scan) of `--order` on `--grid` to `--output`. O(scans · tokens).
    func runScanOrder() throws {
        let sizes = try ScanOrder.parseGrid(grid ?? "")
        let scan = try ScanOrder(named: order ?? "", grid: sizes)
        let shape = [scan.permutations.count, scan.tokens]
        let tensors = ["perm": try DeviceTensor(integers: scan.permutations.flatMap { $0 }, shape: shape, dtype: .int64),
                       "inverse": try DeviceTensor(integers: scan.inverses.flatMap { $0 }, shape: shape, dtype: .int64)]
        try SafeTensors.write(tensors, to: output, metadata: [
            "producer": "linea op scan_order", "order": scan.kind.rawValue, "grid": sizes.map(String.init).joined(separator: ",")])
        printError("op: wrote perm and inverse \(shape) (\(scan.kind.rawValue) on \(sizes.map(String.init).joined(separator: "x"))) to \(output)")
    }
}

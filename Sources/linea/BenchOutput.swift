import Foundation
import Linea

extension BenchCommand {
    /// Writes results as a JSON array with keys mechanism, form, backend, B, T, H, K, V, ms, tokens_per_s, gflops,
    /// peak_bytes, and on the CPU sgemm_gflops (the sgemm timed just before the point).
    func writeJSON(_ results: [BenchResult], to path: String) throws {
        let objects: [[String: Any]] = results.map { r in
            var object: [String: Any] = [
                "mechanism": r.mechanism, "form": r.form, "backend": r.backend,
                "B": r.shape.B, "T": r.shape.T, "H": r.shape.H, "K": r.shape.K, "V": r.shape.V,
                "ms": r.ms, "tokens_per_s": r.tokensPerSecond, "gflops": r.gflops, "peak_bytes": r.peakBytes]
            if let sgemm = r.sgemmGFLOPs { object["sgemm_gflops"] = sgemm }
            return object
        }
        try requireRegularOutput(path)
        let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])
        do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw LineaError.file(path: path, problem: "cannot write JSON: \(error.localizedDescription)")
        }
        printError("bench: wrote \(path)")
    }

    /// Draws ms over T on log-log axes, one polyline per mechanism and form, into an SVG file.
    func writeSVG(_ results: [BenchResult], to path: String) throws {
        guard !results.isEmpty else { return }
        try requireRegularOutput(path)
        let (width, height, margin) = (720.0, 480.0, 60.0)
        let xs = results.map { log10(Double($0.shape.T)) }, ys = results.map { log10($0.ms) }
        let (x0, x1) = (floor(xs.min()!), max(ceil(xs.max()!), floor(xs.min()!) + 1))
        let (y0, y1) = (floor(ys.min()!), max(ceil(ys.max()!), floor(ys.min()!) + 1))
        func px(_ x: Double) -> Double { margin + (x - x0) / (x1 - x0) * (width - 2 * margin) }
        func py(_ y: Double) -> Double { height - margin - (y - y0) / (y1 - y0) * (height - 2 * margin) }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(width / 2)" y="20" text-anchor="middle" font-size="14">Linea: time over sequence length (log-log)</text>
            <text x="\(width / 2)" y="\(height - 15)" text-anchor="middle">T (tokens)</text>
            <text x="15" y="\(height / 2)" transform="rotate(-90 15 \(height / 2))" text-anchor="middle">ms</text>

            """
        for e in Int(x0)...Int(x1) {
            svg += "<line x1=\"\(px(Double(e)))\" y1=\"\(margin)\" x2=\"\(px(Double(e)))\" y2=\"\(height - margin)\" stroke=\"#ddd\"/>"
            svg += "<text x=\"\(px(Double(e)))\" y=\"\(height - margin + 16)\" text-anchor=\"middle\">1e\(e)</text>\n"
        }
        for e in Int(y0)...Int(y1) {
            svg += "<line x1=\"\(margin)\" y1=\"\(py(Double(e)))\" x2=\"\(width - margin)\" y2=\"\(py(Double(e)))\" stroke=\"#ddd\"/>"
            svg += "<text x=\"\(margin - 6)\" y=\"\(py(Double(e)) + 4)\" text-anchor=\"end\">1e\(e)</text>\n"
        }
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
        var series: [String] = []
        for r in results where !series.contains(r.mechanism + " " + r.form) { series.append(r.mechanism + " " + r.form) }
        for (i, name) in series.enumerated() {
            let points = results.filter { $0.mechanism + " " + $0.form == name }.sorted { $0.shape.T < $1.shape.T }
            let color = colors[i % colors.count]
            let coords = points.map { String(format: "%.1f,%.1f", px(log10(Double($0.shape.T))), py(log10($0.ms))) }
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(coords.joined(separator: " "))\"/>\n"
            for c in coords {
                let xy = c.split(separator: ",")
                svg += "<circle cx=\"\(xy[0])\" cy=\"\(xy[1])\" r=\"3\" fill=\"\(color)\"/>"
            }
            svg += "<text x=\"\(margin + 10)\" y=\"\(margin + 16 * Double(i + 1))\" fill=\"\(color)\">\(name)</text>\n"
        }
        svg += "</svg>\n"
        do { try Data(svg.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw LineaError.file(path: path, problem: "cannot write SVG: \(error.localizedDescription)")
        }
        printError("bench: wrote \(path)")
    }
}

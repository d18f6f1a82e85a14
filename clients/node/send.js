// Sends model calls that follow the segwatch span convention, through the
// OpenTelemetry Node SDK and its OTLP/gRPC exporter.
//
//   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 node send.js calls.json
//
// calls.json: {"model": "...", "version": "...", "calls": [{"start_ns": "<int as string>",
//   "features": {...}, "outputs": {...}, "metrics": {...}}, ...]}
'use strict';

const fs = require('fs');
const { trace } = require('@opentelemetry/api');
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');
const { resourceFromAttributes } = require('@opentelemetry/resources');

function hrTime(ns) {
  const big = BigInt(ns);
  return [Number(big / 1000000000n), Number(big % 1000000000n)];
}

async function main() {
  const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const exporter = new OTLPTraceExporter({ url: process.env.OTEL_EXPORTER_OTLP_ENDPOINT });
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'segwatch-node-check' }),
    spanProcessors: [new BatchSpanProcessor(exporter, { maxQueueSize: 100000, maxExportBatchSize: 512 })],
  });
  const tracer = provider.getTracer('segwatch-node-check');
  for (const call of input.calls) {
    const attributes = {
      'ml.model.name': input.model,
      'ml.model.version': input.version,
      'ml.model.stage': 'serving',
      'ml.operation': 'predict',
    };
    for (const [group, prefix] of [['features', 'ml.feature.'], ['outputs', 'ml.output.'], ['metrics', 'ml.metric.']]) {
      for (const [name, value] of Object.entries(call[group] || {})) {
        if (value !== null && value !== undefined) attributes[prefix + name] = value;
      }
    }
    const start = hrTime(call.start_ns);
    const span = tracer.startSpan(`predict ${input.model}`, { attributes, startTime: start });
    span.end(hrTime(BigInt(call.start_ns) + 1000000n));
  }
  await provider.forceFlush();
  await provider.shutdown();
  console.log(`sent ${input.calls.length} calls`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

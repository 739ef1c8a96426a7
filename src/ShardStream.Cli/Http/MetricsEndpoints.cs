using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using ShardStream.Nodes;

namespace ShardStream.Cli.Http;

/// <summary>
/// <c>GET /metrics</c>: the <see cref="ShardStreamMetrics"/> instruments in the Prometheus text
/// format, through OpenTelemetry's Prometheus exporter (why that one: docs/metrics.md).
/// </summary>
internal sealed class MetricsEndpoints : IHttpEndpoints
{
    // service.name: target_info says service_name="shardstream" (without it, "unknown_service:"
    // and the process name: dotnet or shardstream-linux-x64, by build).
    public void AddServices(IServiceCollection services) =>
        services.AddOpenTelemetry().ConfigureResource(r => r.AddService("shardstream", autoGenerateServiceInstanceId: false)).WithMetrics(metrics => metrics
            .AddMeter(ShardStreamMetrics.MeterName)
            .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0));

    public void Map(WebApplication app) => app.MapPrometheusScrapingEndpoint("/metrics");
}

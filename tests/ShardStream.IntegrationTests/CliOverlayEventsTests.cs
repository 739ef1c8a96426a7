using System.Text.Json;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The coordinator's <c>/events</c> (what its page reads) on the real CLI: the trees' part
/// (<c>nodes</c>, one entry per peer) is in the first event and again only when the plan changed,
/// so that an open page costs the coordinator a small message a second, not the whole overlay.
/// </summary>
[Collection(CliCollection.Name)]
public sealed class CliOverlayEventsTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task Events_carry_the_nodes_first_and_again_only_after_the_plan_changed()
    {
        const int peers = 2;
        await using var coordinator = CliProcess.Start(["coordinator", "-l", "127.0.0.1:0", "-s", "2", "--http", "127.0.0.1:0"]);
        string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(60));
        string http = await Prometheus.WaitForHttpAsync(coordinator, TimeSpan.FromSeconds(60));
        using var client = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
        using var cts = new CancellationTokenSource(Deadline);
        using var response = await client.GetAsync(http + "/events", HttpCompletionOption.ResponseHeadersRead, cts.Token);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));

        // The first event has the whole overlay: the coordinator alone.
        var first = await NextEventAsync(reader, cts.Token);
        Assert.Equal(1, first.GetProperty("nodes").GetArrayLength());
        Assert.Equal(0, first.GetProperty("viewers").GetInt32());
        // The next ones, the plan unchanged, have the header's figures and no nodes.
        for (int i = 0; i < 2; i++)
        {
            var next = await NextEventAsync(reader, cts.Token);
            Assert.False(next.TryGetProperty("nodes", out _), $"event {i + 2} repeats the unchanged nodes: {next}");
            Assert.Equal(0, next.GetProperty("viewers").GetInt32());
            Assert.True(next.TryGetProperty("rate", out _) && next.TryGetProperty("source", out _), next.ToString());
        }

        var nodes = new List<CliProcess>();
        try
        {
            for (int i = 0; i < peers; i++) nodes.Add(CliProcess.Start(["peer", "-c", address]));
            // Every change of the viewer count comes with the nodes that explain it; once the plan
            // settles the events go without them again.
            int viewers = 0, seenWithout = 0;
            JsonElement? lastNodes = null;
            var events = new List<string>();
            while (viewers < peers || seenWithout < 2)
            {
                var e = await NextEventAsync(reader, cts.Token);
                events.Add(e.ToString().Length > 200 ? e.ToString()[..200] : e.ToString());
                int v = e.GetProperty("viewers").GetInt32();
                bool hasNodes = e.TryGetProperty("nodes", out var n);
                if (v != viewers) Assert.True(hasNodes, $"the viewer count went {viewers} -> {v} without the nodes:\n{string.Join('\n', events)}");
                if (hasNodes)
                {
                    Assert.Equal(v + 1, n.GetArrayLength());
                    lastNodes = n;
                    seenWithout = 0;
                }
                else if (v == peers) seenWithout++;
                viewers = v;
            }
            // The page's last nodes are the overlay's now. Nothing changes the plan at this point
            // but a failure: a peer silent past the heartbeat timeout (at least 5 s) on a loaded machine is
            // taken for dead and repaired around. Then the overlay fetched differs from the page's
            // last nodes until the events bring the new ones: read them and fetch again.
            var overlay = await OverlayNodesAsync(http);
            var settle = System.Diagnostics.Stopwatch.StartNew();
            while (Trees(overlay) != Trees(lastNodes!.Value) && settle.Elapsed < SettleDeadline)
            {
                while (settle.Elapsed < SettleDeadline)
                {
                    var e = await NextEventAsync(reader, cts.Token);
                    if (!e.TryGetProperty("nodes", out var n)) continue;
                    lastNodes = n;
                    break;
                }
                overlay = await OverlayNodesAsync(http);
            }
            Assert.Equal(Trees(overlay), Trees(lastNodes!.Value));
        }
        finally
        {
            foreach (var p in nodes) await p.DisposeAsync();
        }
    }

    /// <summary>How long the page's last nodes and <c>/api/overlay</c> may differ after a failure changed the plan.</summary>
    private static readonly TimeSpan SettleDeadline = TimeSpan.FromSeconds(60);

    private static async Task<JsonElement> OverlayNodesAsync(string http) =>
        JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement.GetProperty("nodes").Clone();

    /// <summary>The trees of a <c>nodes</c> array (each node's id and parents), without the RTTs, which the plan's JSON refreshes every 30 s.</summary>
    private static string Trees(JsonElement nodes) =>
        string.Join(' ', nodes.EnumerateArray().Select(n => $"{n.GetProperty("id").GetInt32()}<-{n.GetProperty("parents")}"));

    /// <summary>The next server-sent event's data, parsed.</summary>
    private static async Task<JsonElement> NextEventAsync(StreamReader reader, CancellationToken ct)
    {
        string? data = null;
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (line.StartsWith("data: ", StringComparison.Ordinal)) data = line[6..];
            else if (line.Length == 0 && data is not null) return JsonDocument.Parse(data).RootElement.Clone();
        }
        throw new EndOfStreamException("the event stream ended");
    }
}

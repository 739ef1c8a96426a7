using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The coordinator's page in a real browser (Debian's chromium driven by Playwright, no browser
/// download): it draws the trees of a running 20-peer overlay of CLI processes and follows joins
/// and leaves by itself.
/// </summary>
[Collection(CliCollection.Name)]
public sealed partial class CliDashboardTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task The_page_draws_the_trees_of_a_20_peer_overlay_and_follows_joins_and_leaves()
    {
        string? chromium = RequiresTool.FindOnPath("chromium");
        if (RequiresTool.Missing(output, chromium is null ? "chromium is not installed (apt-get install chromium)" : null)) return;
        const int peers = 20, shards = 2;

        await using var coordinator = CliProcess.Start(["coordinator", "-l", "127.0.0.1:0", "-s", shards.ToString(), "--http", "127.0.0.1:0"]);
        string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(60));
        string http = await Prometheus.WaitForHttpAsync(coordinator, TimeSpan.FromSeconds(60));
        using var stop = new CancellationTokenSource();
        var feeding = FeedAsync(coordinator.StandardInput, stop.Token);
        var nodes = new List<CliProcess>();
        try
        {
            for (int i = 0; i < peers; i++) nodes.Add(CliProcess.Start(["peer", "-c", address]));

            // The browser starts while the viewers join (each takes seconds on a loaded machine).
            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = chromium, Headless = true, Args = ["--no-sandbox"] });
            var page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = 1280, Height = 900 } });
            var scriptErrors = new List<string>();
            page.PageError += (_, e) => scriptErrors.Add(e);
            page.Console += (_, m) => { if (m.Type == "error") scriptErrors.Add(m.Text); };
            await WaitForViewersAsync(http, peers);
            await page.GotoAsync(http + "/");

            await Assertions.Expect(page.Locator("#viewers")).ToHaveTextAsync(peers.ToString(), new() { Timeout = 60_000 });
            for (int s = 0; s < shards; s++)
            {
                var tree = page.Locator($"svg[data-shard=\"{s}\"]");
                // The coordinator and every peer once, an edge from each peer to its parent.
                await Assertions.Expect(tree.Locator("g[data-id]")).ToHaveCountAsync(peers + 1, new() { Timeout = 60_000 });
                await Assertions.Expect(tree.Locator("path.edge")).ToHaveCountAsync(peers, new() { Timeout = 60_000 });
            }
            // The header's depth is the overlay's. Peers may still move to shorter paths (the
            // latency-aware planner's improvement moves), so the page and the API are compared
            // until they agree, each read fresh, not one reading of each taken apart in time.
            await Prometheus.WaitUntilAsync(async () =>
            {
                var overlay = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement;
                string api = overlay.GetProperty("maxDepth").GetInt32().ToString(), shown = await page.Locator("#maxdepth").TextContentAsync() ?? "";
                return (api == shown, $"page {shown}, /api/overlay {api}");
            }, TimeSpan.FromSeconds(60), "the page's max depth equal to the overlay's");
            await Assertions.Expect(page.Locator("#peers tbody tr")).ToHaveCountAsync(peers, new() { Timeout = 60_000 });
            string shot = Path.Combine(AppContext.BaseDirectory, "dashboard.png");
            await page.ScreenshotAsync(new() { Path = shot, FullPage = false });
            output.WriteLine($"screenshot: {shot}; render {await page.EvaluateAsync<double>("window.shardstreamRenderMs")} ms");

            // Three viewers fail, two more join: the page follows without a reload. The three feed
            // another viewer: a killed viewer with no child keeps its place for the coordinator's
            // rejoin grace (40 s at the default heartbeat timeout) before the overlay drops it, a
            // wait of the coordinator's, not the page's; a child's report ends it at once.
            var victims = await RelaysAsync(http, nodes, 3);
            foreach (var victim in victims)
            {
                victim.Kill();
                await victim.WaitForExitAsync(Deadline);
            }
            await WaitForViewersAsync(http, peers - 3);
            await Assertions.Expect(page.Locator("#viewers")).ToHaveTextAsync((peers - 3).ToString(), new() { Timeout = 60_000 });
            for (int i = 0; i < 2; i++) nodes.Add(CliProcess.Start(["peer", "-c", address]));
            await Assertions.Expect(page.Locator("#viewers")).ToHaveTextAsync((peers - 1).ToString(), new() { Timeout = 120_000 });
            for (int s = 0; s < shards; s++)
                await Assertions.Expect(page.Locator($"svg[data-shard=\"{s}\"] g[data-id]")).ToHaveCountAsync(peers, new() { Timeout = 60_000 });
            await Assertions.Expect(page.Locator("#peers tbody tr")).ToHaveCountAsync(peers - 1, new() { Timeout = 60_000 });
            Assert.Empty(scriptErrors);
        }
        catch
        {
            // What the page did not show is in the nodes' logs: which viewers ended, and why.
            for (int i = 0; i < nodes.Count; i++)
                if (nodes[i].HasExited) output.WriteLine($"viewer {i} exited:\n  {string.Join("\n  ", nodes[i].StderrLines.TakeLast(8))}");
            output.WriteLine($"coordinator:\n  {string.Join("\n  ", coordinator.StderrLines.TakeLast(60))}");
            throw;
        }
        finally
        {
            await stop.CancelAsync();
            await feeding;
            foreach (var p in nodes) await p.DisposeAsync();
        }
    }

    /// <summary>
    /// <paramref name="count"/> of the <paramref name="viewers"/> that /api/overlay shows as the
    /// parent of another viewer in some shard (by the id each logged at its join); more than enough
    /// feed another in a 20-peer overlay of two shards, each viewer relaying in its own tree.
    /// </summary>
    private static async Task<List<CliProcess>> RelaysAsync(string http, List<CliProcess> viewers, int count)
    {
        var nodes = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement.GetProperty("nodes").EnumerateArray().ToList();
        var parents = nodes.SelectMany(n => n.GetProperty("parents").EnumerateArray().Select(p => p.GetInt32())).ToHashSet();
        var relays = viewers.Where(v => v.StderrLines.Select(l => JoinedRegex().Match(l)).LastOrDefault(m => m.Success) is { } joined
            && joined.Groups[1].Value is var id && parents.Contains(int.Parse(id, CultureInfo.InvariantCulture))).Take(count).ToList();
        Assert.True(relays.Count == count, $"{relays.Count} viewers feed another, {count} wanted; parents {string.Join(",", parents)}");
        return relays;
    }

    [GeneratedRegex(@"joined as peer (\d+) ")]
    private static partial Regex JoinedRegex();

    private static async Task WaitForViewersAsync(string http, int viewers) =>
        await Prometheus.WaitUntilAsync(async () =>
        {
            var overlay = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement;
            int seen = overlay.GetProperty("viewers").GetInt32();
            return (seen == viewers, $"{seen} viewers");
        }, Deadline, $"{viewers} viewers in the overlay");

    /// <summary>A live source: 32 KiB every 100 ms until stopped.</summary>
    private static async Task FeedAsync(Stream stdin, CancellationToken ct)
    {
        var block = new byte[32 * 1024];
        new Random(7).NextBytes(block);
        try
        {
            while (!ct.IsCancellationRequested)
            {
                await stdin.WriteAsync(block, ct);
                await stdin.FlushAsync(ct);
                await Task.Delay(100, ct);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // Stopped, or the coordinator is gone.
        }
    }
}

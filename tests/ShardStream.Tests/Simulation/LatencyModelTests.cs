using ShardStream.Simulation;

namespace ShardStream.Tests.Simulation;

public sealed class LatencyModelTests
{
    [Fact]
    public void The_world_model_is_seeded_symmetric_and_zero_to_itself()
    {
        var a = new WorldLatencyModel(3);
        var b = new WorldLatencyModel(3);
        var other = new WorldLatencyModel(4);
        var differs = 0;
        for (var i = 0; i < 200; i++)
        {
            var j = (i * 7919) % 1000;
            Assert.Equal(a.RttMs(i, j), b.RttMs(i, j));
            Assert.Equal(a.RttMs(i, j), a.RttMs(j, i));
            differs += a.RttMs(i, j + 1) != other.RttMs(i, j + 1) ? 1 : 0;
        }

        Assert.Equal(0, a.RttMs(17, 17));
        Assert.True(differs > 150, $"only {differs} of 200 RTTs differ between seeds 3 and 4");
    }

    [Fact]
    public void World_regions_follow_their_shares_and_hubs_keep_the_measured_pings()
    {
        var model = new WorldLatencyModel(1);
        var counts = new int[WorldLatencyModel.Regions.Length];
        const int Peers = 100_000;
        for (var p = 1; p <= Peers; p++)
        {
            counts[model.RegionOf(p)]++;
        }

        for (var r = 0; r < counts.Length; r++)
        {
            Assert.InRange((double)counts[r] / Peers, WorldLatencyModel.Regions[r].Share - 0.005, WorldLatencyModel.Regions[r].Share + 0.005);
        }

        // Paris - New York and New York - Fremont, as pinged (WonderProxy 2011).
        Assert.Equal(78, model.HubRtt(0, 2));
        Assert.Equal(78, model.HubRtt(2, 3));

        // Tokyo - Singapore is derived: 5,300 km of great circle at 1.98 ms of RTT per 100 km.
        Assert.InRange(model.HubRtt(5, 6), 100, 110);
    }

    [Fact]
    public void World_RTTs_are_short_inside_a_region_and_long_across_oceans()
    {
        var model = new WorldLatencyModel(2);
        var intra = new List<double>();
        var inter = new List<double>();
        for (var i = 1; i < 3000; i++)
        {
            var j = i + 1;
            (model.RegionOf(i) == model.RegionOf(j) ? intra : inter).Add(model.RttMs(i, j));
        }

        intra.Sort();
        inter.Sort();
        var intraMedian = intra[intra.Count / 2];
        var interMedian = inter[inter.Count / 2];
        Assert.InRange(intraMedian, 10, 60);
        Assert.InRange(interMedian, 100, 300);
        Assert.All(intra.Concat(inter), rtt => Assert.InRange(rtt, 2 + 2, 600));
    }

    [Fact]
    public void A_matrix_places_peers_on_hosts_round_robin_with_an_access_delay_each()
    {
        // Host 0 (the coordinator's) and three others; 2 -> 3 measured one way only, 1 <-> 3 not at all.
        const string Text = """
            4
            0, 10, 80, 90
            12, 0, 70, -1
            80, 70, 0, 30
            90, -1, -1, -1
            """;
        var model = MatrixLatencyModel.Parse(Text, seed: 5, name: "test");

        Assert.Equal(4, model.Hosts);
        Assert.Equal(11, model.HostRtt(0, 1)); // 10 and 12 averaged
        Assert.Equal(30, model.HostRtt(2, 3)); // one direction measured
        Assert.Equal(0, model.HostRtt(3, 3));  // -1 on the diagonal
        Assert.Equal(100, model.HostRtt(1, 3)); // unmeasured: 1 -> 2 -> 3 = 70 + 30 (1 -> 0 -> 3 is 101)
        Assert.Equal(1, model.FilledPairs);

        // Peer 5 is on host 1, peer 8 on host 0 with the coordinator; peers add their access delay.
        Assert.Equal(1, model.HostOf(5));
        Assert.Equal(0, model.HostOf(8));
        var access5 = model.RttMs(0, 5) - 11;
        var access8 = model.RttMs(0, 8);
        Assert.InRange(access5, 1, 60);
        Assert.InRange(access8, 1, 60);
        Assert.Equal(model.RttMs(5, 8), 11 + access5 + access8, 9);
        Assert.Equal(model.RttMs(5, 8), model.RttMs(8, 5));

        // The same seed, the same access delays; --latency matrix:FILE reads the same format.
        var again = (MatrixLatencyModel)LatencyModel.Parse("matrix:m.csv", 5, path => path == "m.csv" ? Text : throw new FileNotFoundException(path))!;
        Assert.Equal(model.RttMs(5, 8), again.RttMs(5, 8));
    }

    /// <summary>
    /// The model's line in the report counts in words that agree with the numbers: "1 pairs filled
    /// by paths" and "1 hosts" before 2026-12-06.
    /// </summary>
    [Theory]
    [InlineData("1\n0\n", "matrix m.csv (1 host, 0 pairs filled by paths, seed 5)")]
    [InlineData("3\n0,42,180\n40,0,-1\n181,-1,0\n", "matrix m.csv (3 hosts, 1 pair filled by a path, seed 5)")]
    [InlineData("4\n0,10,20,30\n10,0,-1,-1\n20,-1,0,-1\n30,-1,-1,0\n", "matrix m.csv (4 hosts, 3 pairs filled by paths, seed 5)")]
    public void A_matrix_describes_itself_in_agreeing_words(string text, string description)
    {
        Assert.Equal(description, MatrixLatencyModel.Parse(text, seed: 5, name: "m.csv").Description);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("x\n", "line 1: the host count must be an integer")]
    [InlineData("2\n0,1\n", "2 hosts need 2 rows after the first line, got 1")]
    [InlineData("2\n0,1\n1\n", "line 3: 2 comma-separated RTTs expected, got 1")]
    [InlineData("2\n0,abc\n1,0\n", "line 2, column 2: an RTT in ms (>= 0) or -1 expected, got 'abc'")]
    [InlineData("2\n0,-5\n1,0\n", "line 2, column 2: an RTT in ms (>= 0) or -1 expected, got '-5'")]
    [InlineData("3\n0,-1,5\n-1,0,-1\n5,-1,0\n", "hosts 0 and 1 have no measured RTT and no path")]
    public void A_malformed_matrix_is_refused_with_the_reason(string text, string reason)
    {
        var error = Assert.Throws<FormatException>(() => MatrixLatencyModel.Parse(text, 1, "bad.csv"));
        Assert.Contains(reason, error.Message, StringComparison.Ordinal);
        Assert.StartsWith("bad.csv: ", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Latency_names_are_none_world_or_a_matrix_file()
    {
        Assert.Null(LatencyModel.Parse("none", 1, _ => ""));
        Assert.IsType<WorldLatencyModel>(LatencyModel.Parse("world", 1, _ => ""));
        var error = Assert.Throws<FormatException>(() => LatencyModel.Parse("moon", 1, _ => ""));
        Assert.Equal("unknown latency model 'moon': use none, world or matrix:FILE", error.Message);
    }
}

using Microsoft.Extensions.Time.Testing;
using ShardStream.Simulation;
using ShardStream.Transport;

namespace ShardStream.Tests.Transport;

public sealed class VirtualNetworkLatencyModelTests
{
    [Fact]
    public async Task Hosts_get_the_one_way_delay_of_the_latency_model()
    {
        var time = new FakeTimeProvider();
        var net = new VirtualNetwork(time);
        var model = new WorldLatencyModel(seed: 9);
        net.UseLatencyModel(["coordinator", "peer1", "peer2"], model.OneWay);
        var oneWay = model.OneWay(1, 2);
        Assert.True(oneWay > TimeSpan.FromMilliseconds(2), $"one-way {oneWay.TotalMilliseconds} ms");

        var listener = await net.Host("peer2").ListenAsync("peer2:0", default);
        var client = await net.Host("peer1").ConnectAsync(listener.LocalAddress, default);
        var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);

        await PipeIo.WriteAsync(client.Pipe.Output, "hello"u8.ToArray());
        var reading = PipeIo.ReadExactlyAsync(server.Pipe.Input, 5);
        var arrival = await ArrivalAsync(time, reading);

        // Timers count whole milliseconds: the delay is at least the model's, to the millisecond.
        Assert.True(arrival >= oneWay - TimeSpan.FromMilliseconds(1), $"arrived after {arrival.TotalMilliseconds} ms of virtual time, the model says {oneWay.TotalMilliseconds} ms");
        Assert.Equal("hello"u8.ToArray(), await reading);
    }

    [Fact]
    public async Task A_latency_set_for_a_pair_wins_over_the_model()
    {
        var time = new FakeTimeProvider();
        var net = new VirtualNetwork(time);
        var model = new WorldLatencyModel(seed: 9);
        net.UseLatencyModel(["coordinator", "peer1"], model.OneWay);
        net.SetLatency("coordinator", "peer1", TimeSpan.FromMilliseconds(500));
        // Far enough below the pair's own that a step more would not reach it either.
        Assert.True(model.OneWay(0, 1) < TimeSpan.FromMilliseconds(500) - Step - Step, $"the model's delay is {model.OneWay(0, 1).TotalMilliseconds} ms");

        var listener = await net.Host("coordinator").ListenAsync("coordinator:0", default);
        var client = await net.Host("peer1").ConnectAsync(listener.LocalAddress, default);
        var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);

        await PipeIo.WriteAsync(client.Pipe.Output, [7]);
        var reading = PipeIo.ReadExactlyAsync(server.Pipe.Input, 1);
        var arrival = await ArrivalAsync(time, reading);

        Assert.True(arrival >= TimeSpan.FromMilliseconds(500), $"arrived after {arrival.TotalMilliseconds} ms of virtual time: the model's delay was used instead of the pair's own");
        Assert.Equal(new byte[] { 7 }, await reading);
    }

    /// <summary>
    /// Moves virtual time on by <see cref="Step"/> until <paramref name="reading"/> completes, and
    /// returns the virtual time that passed: never less than the link's delay, however busy the
    /// machine (a late pump only delays the arrival further), and at most a step more when the
    /// pump keeps up. Each step waits a real millisecond or more for the pump: 1 ms steps took
    /// 500 of them for a 500 ms link, and at a CI run's load of 55 they did not fit in the 10 s
    /// deadline ("the bytes never arrived": 20 ms or more a step).
    /// </summary>
    private static async Task<TimeSpan> ArrivalAsync(FakeTimeProvider time, Task reading)
    {
        var start = time.GetUtcNow();
        var deadline = DateTime.UtcNow + PipeIo.Deadline;
        while (!reading.IsCompleted)
        {
            Assert.True(DateTime.UtcNow < deadline, "the bytes never arrived");
            time.Advance(Step);
            await Task.Delay(1);
        }

        return time.GetUtcNow() - start;
    }

    /// <summary>Virtual time moved on at each step of <see cref="ArrivalAsync"/>.</summary>
    private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(10);
}

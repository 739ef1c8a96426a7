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

        var (client, server) = await ConnectAsync(net, "peer1", "peer2");

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

        var (client, server) = await ConnectAsync(net, "peer1", "coordinator");

        await PipeIo.WriteAsync(client.Pipe.Output, [7]);
        var reading = PipeIo.ReadExactlyAsync(server.Pipe.Input, 1);
        var arrival = await ArrivalAsync(time, reading);

        Assert.True(arrival >= TimeSpan.FromMilliseconds(500), $"arrived after {arrival.TotalMilliseconds} ms of virtual time: the model's delay was used instead of the pair's own");
        Assert.Equal(new byte[] { 7 }, await reading);
    }

    [Fact]
    public async Task A_frame_sent_while_another_is_on_its_way_arrives_one_delay_after_it_was_sent()
    {
        // Two frames 100 ms apart on a path of 200 ms one way. The pump used to take the first,
        // wait its 200 ms, hand it on, and only then take the second and wait 200 ms more: the
        // second arrived 300 ms after it was sent (a ping behind a frame of the stream read up to
        // twice the path's RTT). Virtual time moves on to 200 ms after the second was sent, and no
        // further: by then both must have arrived.
        var time = new FakeTimeProvider();
        var net = new VirtualNetwork(time);
        net.SetLatency("peer1", "peer2", TimeSpan.FromMilliseconds(200));
        var (client, server) = await ConnectAsync(net, "peer1", "peer2");

        var reading = PipeIo.ReadExactlyAsync(server.Pipe.Input, 2);
        await PipeIo.WriteAsync(client.Pipe.Output, [1]);
        await MoveOnAsync(time, TimeSpan.FromMilliseconds(100));
        await PipeIo.WriteAsync(client.Pipe.Output, [2]);
        await MoveOnAsync(time, TimeSpan.FromMilliseconds(200));

        await Task.WhenAny(reading, Task.Delay(PipeIo.Deadline));
        Assert.True(reading.IsCompletedSuccessfully, "the second frame had not arrived 200 ms (virtual) after it was sent on a path of 200 ms one way: it waited behind the first frame's delay");
        Assert.Equal(new byte[] { 1, 2 }, await reading);
    }

    [Fact]
    public async Task What_a_frozen_path_held_arrives_one_delay_after_the_thaw()
    {
        // A frame sent on a frozen path of 200 ms one way, held 500 ms (virtual): at the thaw its
        // own delay is long over, but a healed path carries it from then on, one delay more.
        var time = new FakeTimeProvider();
        var net = new VirtualNetwork(time);
        net.SetLatency("peer1", "peer2", TimeSpan.FromMilliseconds(200));
        var (client, server) = await ConnectAsync(net, "peer1", "peer2");

        net.Freeze("peer1", "peer2");
        var reading = PipeIo.ReadExactlyAsync(server.Pipe.Input, 1);
        await PipeIo.WriteAsync(client.Pipe.Output, [1]);
        await MoveOnAsync(time, TimeSpan.FromMilliseconds(500));
        net.Thaw("peer1", "peer2");
        await MoveOnAsync(time, TimeSpan.FromMilliseconds(100));
        // Half the delay after the thaw, with real time for the pump to run: not there yet.
        await Task.WhenAny(reading, Task.Delay(TimeSpan.FromMilliseconds(500)));
        Assert.False(reading.IsCompleted, "the frame arrived 100 ms (virtual) after the path thawed, on a path of 200 ms one way");
        // It comes once virtual time moves on (a step or more past the delay when the pump woke
        // to the thaw after virtual time had moved on already).
        var arrival = TimeSpan.FromMilliseconds(100) + await ArrivalAsync(time, reading);
        Assert.True(arrival >= TimeSpan.FromMilliseconds(200), $"arrived {arrival.TotalMilliseconds} ms (virtual) after the thaw");
        Assert.Equal(new byte[] { 1 }, await reading);
    }

    /// <summary>A connection from host <paramref name="from"/> to a listener on host <paramref name="to"/>: both ends.</summary>
    private static async Task<(IConnection Client, IConnection Server)> ConnectAsync(VirtualNetwork net, string from, string to)
    {
        var listener = await net.Host(to).ListenAsync($"{to}:0", default);
        var client = await net.Host(from).ConnectAsync(listener.LocalAddress, default);
        var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);
        return (client, server);
    }

    /// <summary>Moves virtual time on by <paramref name="span"/>, a <see cref="Step"/> at a time, each a real millisecond or more apart.</summary>
    private static async Task MoveOnAsync(FakeTimeProvider time, TimeSpan span)
    {
        for (var moved = TimeSpan.Zero; moved < span; moved += Step)
        {
            time.Advance(Step);
            await Task.Delay(1);
        }
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

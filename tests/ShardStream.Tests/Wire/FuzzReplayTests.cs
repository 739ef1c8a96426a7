using ShardStream.Fuzz;

namespace ShardStream.Tests.Wire;

/// <summary>
/// <c>shardstream-fuzz replay</c>, which scripts/fuzz.sh runs on afl's crashes and hangs (and CI
/// with it): an input that hangs the decoder must be reported as a bug within the time limit, and
/// the replay must go on, or the script (and CI) waits for it forever.
/// </summary>
public class FuzzReplayTests
{
    [Fact]
    public void An_input_that_hangs_is_reported_within_the_limit_and_the_replay_goes_on()
    {
        string folder = Directory.CreateTempSubdirectory("shardstream-replay-").FullName;
        try
        {
            File.WriteAllBytes(Path.Combine(folder, "a-hang"), [0xAA]);
            File.WriteAllBytes(Path.Combine(folder, "b-heartbeat"), [0, 0, 0, 9, 6, 0, 0, 0, 0, 0, 0, 0, 3]);
            using var released = new ManualResetEventSlim();
            var output = new StringWriter();

            // The "hang" ends when the test releases it (or after 5 s, so that a replay that waits
            // for it fails here instead of hanging the test run).
            int bugs = Replay.Run([folder], output, TimeSpan.FromMilliseconds(200), input =>
            {
                if (input[0] == 0xAA) released.Wait(TimeSpan.FromSeconds(5));
                return FrameRoundTrip.Check(input);
            });
            bool releasedByTest = !released.IsSet;
            released.Set();

            string text = output.ToString();
            Assert.True(releasedByTest && bugs == 1, $"{bugs} bug(s) reported:\n{text}");
            Assert.Contains("a-hang: HANG", text);
            Assert.Contains("b-heartbeat: 13 bytes, 1 frames, 1 decoded", text);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}

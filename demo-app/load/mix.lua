-- A read-and-write mix for wrk against the demo app (see scripts/load.sh
-- and scripts/chaos.sh). LOAD_DATA names a file of "token <jwt>" and
-- "slug <slug>" lines made by the seeding step. Each request is, in turn: a
-- page of 20 articles, one article, the feed, the tags, a new comment, or
-- a new article with two tags. Counts the writes that were answered 201
-- and the answers that were not 2xx, for the row-count check, and the
-- answers by status.
--
-- Every request carries an `x-request-id` (which the app echoes, also on
-- an error) naming its kind, thread and number; a new comment's body and a
-- new article's title hold the thread and number too. With LOAD_RECORD
-- set, each thread writes a line "<status> <kind> <thread> <number>
-- <unknown>" for every write it got an answer to into the file
-- LOAD_RECORD.<thread>, so that scripts/chaos.sh can check each answer
-- against the database. <unknown> is t for a 500 that says the outcome is
-- unknown (the connection broke after COMMIT was sent: the write may be
-- saved), f otherwise; the answers by status count those as "unknown".

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

local mix = {
  "list", "list", "list", "list", "list", "list",
  "article", "article", "feed", "tags",
  "comment", "comment", "comment", "create",
}

tokens, slugs = {}, {}
counter, comments_ok, articles_ok, failed = 0, 0, 0, 0
statuses = {}
record = nil

function init(args)
  for line in io.lines(os.getenv("LOAD_DATA")) do
    local kind, value = line:match("^(%S+) (%S+)$")
    if kind == "token" then
      table.insert(tokens, value)
    elseif kind == "slug" then
      table.insert(slugs, value)
    end
  end
  local path = os.getenv("LOAD_RECORD")
  if path then
    record = assert(io.open(path .. "." .. id, "w"))
    -- wrk never closes a thread's script, so nothing may stay buffered.
    record:setvbuf("line")
  end
end

function request()
  counter = counter + 1
  local kind = mix[counter % #mix + 1]
  local headers = {
    ["Authorization"] = "Token " .. tokens[(counter * 7 + id) % #tokens + 1],
    ["Content-Type"] = "application/json",
    ["x-request-id"] = string.format("load-%s-%d-%d", kind, id, counter),
  }
  local slug = slugs[(counter * 13 + id) % #slugs + 1]
  if kind == "list" then
    return wrk.format("GET", "/api/articles?limit=20", headers)
  elseif kind == "article" then
    return wrk.format("GET", "/api/articles/" .. slug, headers)
  elseif kind == "feed" then
    return wrk.format("GET", "/api/articles/feed", headers)
  elseif kind == "tags" then
    return wrk.format("GET", "/api/tags", headers)
  elseif kind == "comment" then
    local body = string.format('{"comment":{"body":"load %d-%d"}}', id, counter)
    return wrk.format("POST", "/api/articles/" .. slug .. "/comments", headers, body)
  else
    local body = string.format(
      '{"article":{"title":"Load %d %d","description":"d","body":"b","tagList":["load","t%d"]}}',
      id, counter, counter % 10)
    return wrk.format("POST", "/api/articles", headers, body)
  end
end

-- The message of the app's 500 for a commit whose outcome is unknown
-- (demo-app/src/error.rs, OUTCOME_UNKNOWN).
local outcome_unknown = "may or may not have been saved"

function response(status, headers, body)
  local unknown = status == 500 and body:find(outcome_unknown, 1, true) ~= nil
  local answer = unknown and "unknown" or status
  statuses[answer] = (statuses[answer] or 0) + 1
  if status == 201 then
    if body:find('^{"comment"') then
      comments_ok = comments_ok + 1
    elseif body:find('^{"article"') then
      articles_ok = articles_ok + 1
    end
  elseif status >= 300 then
    failed = failed + 1
  end
  if record then
    local kind, thread, number = (headers["x-request-id"] or ""):match("^load%-(%a+)%-(%d+)%-(%d+)$")
    if kind == "comment" or kind == "create" then
      record:write(string.format("%d %s %s %s %s\n",
        status, kind == "create" and "article" or kind, thread, number, unknown and "t" or "f"))
    end
  end
end

function done(summary, latency, requests)
  local comments, articles, failures, by_status = 0, 0, 0, {}
  for _, thread in ipairs(threads) do
    comments = comments + thread:get("comments_ok")
    articles = articles + thread:get("articles_ok")
    failures = failures + thread:get("failed")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  io.write(string.format("load-result: comments_ok=%d articles_ok=%d failed=%d\n", comments, articles, failures))
  io.write(string.format("load-result: p50_us=%d p99_us=%d\n", latency:percentile(50), latency:percentile(99)))
  local answers = {}
  for status, count in pairs(by_status) do
    table.insert(answers, string.format("%s=%d", status, count))
  end
  table.sort(answers)
  io.write("load-result: statuses " .. table.concat(answers, " ") .. "\n")
end

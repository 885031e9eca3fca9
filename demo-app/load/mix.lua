-- A read-and-write mix for wrk against the demo app (see scripts/load.sh).
-- LOAD_DATA names a file of "token <jwt>" and "slug <slug>" lines made by
-- the seeding step. Each request is, in turn: a page of 20 articles, one
-- article, the feed, the tags, a new comment, or a new article with two
-- tags. Counts the writes that were answered 201 and the answers that were
-- not 2xx, for the row-count check.

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

function init(args)
  for line in io.lines(os.getenv("LOAD_DATA")) do
    local kind, value = line:match("^(%S+) (%S+)$")
    if kind == "token" then
      table.insert(tokens, value)
    elseif kind == "slug" then
      table.insert(slugs, value)
    end
  end
end

function request()
  counter = counter + 1
  local kind = mix[counter % #mix + 1]
  local headers = {
    ["Authorization"] = "Token " .. tokens[(counter * 7 + id) % #tokens + 1],
    ["Content-Type"] = "application/json",
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

function response(status, headers, body)
  if status == 201 then
    if body:find('^{"comment"') then
      comments_ok = comments_ok + 1
    elseif body:find('^{"article"') then
      articles_ok = articles_ok + 1
    end
  elseif status >= 300 then
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local comments, articles, failures = 0, 0, 0
  for _, thread in ipairs(threads) do
    comments = comments + thread:get("comments_ok")
    articles = articles + thread:get("articles_ok")
    failures = failures + thread:get("failed")
  end
  io.write(string.format("load-result: comments_ok=%d articles_ok=%d failed=%d\n", comments, articles, failures))
  io.write(string.format("load-result: p50_us=%d p99_us=%d\n", latency:percentile(50), latency:percentile(99)))
end

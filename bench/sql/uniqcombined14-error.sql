-- uniqCombined(14)'s error where its HyperLogLog switches from linear counting to the raw
-- estimate (2.5 x 2^14 = 40,960; no bias correction below precision 17): 1,000 random sets of
-- each size, as query-bench's error table draws them (signed mean: a bias shows as a mean
-- away from 0). Needs no data: any engine dir will do.
-- name: uniqCombined(14), 30000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 30000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 30000) / 30000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(30000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 33000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 33000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 33000) / 33000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(33000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 36000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 36000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 36000) / 36000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(36000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 38000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 38000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 38000) / 38000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(38000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 40000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 40000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 40000) / 40000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(40000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 41000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 41000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 41000) / 41000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(41000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 42000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 42000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 42000) / 42000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(42000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 44000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 44000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 44000) / 44000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(44000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 47000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 47000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 47000) / 47000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(47000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 50000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 50000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 50000) / 50000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(50000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 55000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 55000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 55000) / 55000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(55000) AS number GROUP BY seed)
;;
-- name: uniqCombined(14), 60000 distinct ids, 1,000 random sets: error against the true size (%)
SELECT 60000 AS ids, round(avg(e), 2) AS mean_signed, round(quantileExact(0.5)(abs(e)), 2) AS p50, round(quantileExact(0.99)(abs(e)), 2) AS p99, round(max(abs(e)), 2) AS worst
FROM (SELECT (uniqCombined(14)(cityHash64(seed, number)) - 60000) / 60000 * 100 AS e
      FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range(60000) AS number GROUP BY seed)

// The notebook in a real browser (Debian's headless Chromium through playwright-core):
// open the runs list, open the failing run, follow a failing property's first failure
// to its moment, branch from it, run a command in a container and see its output,
// look at the timeline and the logs, and export the trace. Screenshots of each page go
// to $SHOTS. First, a campaign running in the background ($CAMPAIGN): the campaigns
// list, its tree growing on the page without a reload, its report when it ends, a
// failing timeline followed to its moment (rebuilt by the campaign replay), its logs. Exits non-zero with a message on the first thing that is not as expected.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const base = process.env.BASE_URL, run = process.env.RUN, shots = process.env.SHOTS;
const campaign = process.env.CAMPAIGN;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(cond, what) { if (!cond) throw new Error("expected: " + what); }

(async () => {
  const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page.setDefaultTimeout(120000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const shot = (name) => page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
  try {
    // 0. A campaign while it runs: listed, its tree grows live, then its report.
    await page.goto(base + "/campaigns");
    const crow = page.locator(`tr[data-campaign="${campaign}"]`);
    await crow.waitFor();
    await shot("campaigns");
    await crow.locator("a").first().click();
    await page.waitForURL("**/campaigns/" + campaign);
    check((await page.textContent("#campaign-status")).includes("running"), "the campaign is still running");
    await page.evaluate(() => { window.sameDocument = true; });
    const before = await page.locator("li.tl").count();
    const reloaded = page.waitForEvent("load", { timeout: 600000 });
    await page.waitForFunction((n) => document.querySelectorAll("li.tl").length > n, before, { timeout: 600000 });
    check(await page.evaluate(() => window.sameDocument === true), "the tree grew without a reload");
    check(await page.locator("li.tl.new").count() > 0, "new timelines drawn by the live script");
    // At the end the page reloads with the judged report.
    await reloaded;
    check(!(await page.textContent("#campaign-status")).includes("running"), "the campaign ended");
    await page.locator("table.properties tr.failed").first().waitFor();
    check(await page.locator("li.tl").count() === 9, "the root and 8 branches in the tree");
    await shot("campaign");
    // A failing timeline, followed to its failure's moment.
    const failing = page.locator("li.tl.failed:has(> .tl-head a.tl-failure)").first();
    const failingId = await failing.getAttribute("data-id");
    await failing.locator(":scope > .tl-head a.tl-failure").click();
    await page.waitForURL(`**/moments/${campaign}/T${failingId}@*`);
    await page.getByRole("heading", { name: "Services and VMs" }).waitFor({ timeout: 600000 });
    const mtext = await page.textContent("body");
    check(mtext.includes("replayed events identical to the run's"), "the campaign replay matches the stored timeline");
    check(mtext.includes("then the path T"), "rebuilt by its path of forks");
    await shot("campaign-moment");
    // Its logs, over every timeline.
    await page.goto(base + "/campaigns/" + campaign + "/logs?kind=agent.sdk&text=MISSING");
    await page.locator("table.events tbody tr").first().waitFor();
    await shot("campaign-logs");

    // 1. The runs list.
    await page.goto(base + "/");
    const row = page.locator(`tr[data-run="${run}"]`);
    await row.waitFor();
    check((await row.textContent()).includes("properties_failed"), "the run is listed as failed");
    await shot("runs");

    // 2. The failing run's triage page.
    await row.locator("a").first().click();
    await page.waitForURL("**/runs/" + run);
    const failed = page.locator("table.properties tr.failed").first();
    await failed.waitFor();
    await shot("triage");

    // 3. Its first failure, a moment replayed from the nearest snapshot.
    await failed.locator("td.first-failure a.moment").click();
    await page.waitForURL("**/moments/**");
    await page.getByRole("heading", { name: "Services and VMs" }).waitFor();
    check((await page.textContent("body")).includes("replayed events identical to the run's"), "the replay matches the run");
    const momentUrl = page.url();
    await shot("moment");

    // 4. Branch from it with a new seed.
    const branch = page.locator('form.action[data-kind="branch"]');
    await branch.locator('input[name="branch"]').fill("3");
    await branch.locator('input[name="run_for"]').fill("300ms");
    await branch.locator("button").click();
    await page.waitForURL("**/notebook#cell-*");
    const branchCell = page.locator("section.cell").last();
    await page.waitForFunction(() => {
      const cells = document.querySelectorAll("section.cell");
      const c = cells[cells.length - 1];
      return c && c.dataset.status === "done";
    });
    check((await branchCell.textContent()).includes("branch timeline"), "the branch is a timeline");

    // 5. Run a command in a container at the moment, and see its output.
    await page.goto(momentUrl);
    const exec = page.locator('form.action[data-kind="exec"]');
    await exec.locator('select[name="node"]').selectOption("kv");
    await exec.locator('input[name="command"]').fill("cat /etc/hosts");
    await exec.locator("button").click();
    await page.waitForURL("**/notebook#cell-*");
    await page.waitForFunction(() => {
      const cells = document.querySelectorAll("section.cell");
      const c = cells[cells.length - 1];
      return c && c.dataset.status === "done" && c.querySelector(".exec-output");
    });
    const out = await page.locator("section.cell").last().locator(".exec-output").textContent();
    check(out.includes("10.0.0.3") && out.includes("kv"), "the command's output: " + out);
    check((await page.locator("section.cell").last().locator(".exit-code").textContent()) === "0", "exit code 0");
    await shot("notebook");

    // 6. The timeline, drawn from the aggregated API.
    await page.goto(base + "/runs/" + run + "/timeline");
    await page.waitForFunction(() => window.timelineReady !== undefined);
    await page.evaluate(() => window.timelineReady);
    await page.waitForFunction(() => document.getElementById("timeline-window").textContent.includes(" of "));
    await shot("timeline");

    // 7. The logs, searched.
    await page.goto(base + "/runs/" + run + "/logs?kind=agent.sdk&text=MISSING");
    await page.locator("table.events tbody tr").first().waitFor();
    await shot("logs");

    // 8. Export the trace.
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.locator("nav.tabs a", { hasText: "export trace" }).click(),
    ]);
    const file = path.join(require("os").tmpdir(), `detvm-notebook-trace-${process.pid}.json`);
    await download.saveAs(file);
    const trace = JSON.parse(fs.readFileSync(file, "utf8"));
    fs.unlinkSync(file);
    check(trace.traceEvents.some((e) => e.name === "thread_name" && e.args.name === "kv"), "a kv track in the trace");
    check(errors.length === 0, "no script errors: " + errors.join("; "));
    console.log("browser test passed: " + ["campaigns", "campaign", "campaign-moment", "campaign-logs", "runs", "triage", "moment", "notebook", "timeline", "logs"].join(", "));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error("browser test failed: " + (e && e.stack || e)); process.exit(1); });

"""What an open studio page costs a running training run: CPU time of the server, the browser and
the worker, and training steps, over 30-s windows — with no page (the baseline, same run), with
the page open on the Train tab (twice), on the Data tab, and after it is closed.

    python bench/page_cost.py [WORKSPACE]     (a new temporary workspace by default)
"""
import os, socket, sys, tempfile, time, subprocess, pathlib, resource
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from studio.core import Studio
from studio.launch import serve
home = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="page-cost-"))
steps = {}
studio = Studio(home, standby=False)  # the worker is found by its command line; nothing else importing
run_id = studio.start_run(model="default", dataset="quillpad_faq", method="lora",
                          params={"num_train_epochs": 3, "learning_rate": 3e-3})
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
app = serve(studio, port=port, block=False)
from playwright.sync_api import sync_playwright
def cpu_of(pids):
    tot = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().split(")")[1].split()
            tot += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except Exception: pass
    return tot
def kids(name):
    out = subprocess.run(["pgrep", "-f", name], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]
while studio.get_run(run_id)["step"] < 2: time.sleep(1)
def sample(label, secs=30):
    w = kids("pipelines.run")
    r0 = resource.getrusage(resource.RUSAGE_SELF); c0 = cpu_of(kids("chromium")); w0 = cpu_of(w); s0 = studio.get_run(run_id)["step"]; t0=time.time()
    time.sleep(secs)
    r1 = resource.getrusage(resource.RUSAGE_SELF); c1 = cpu_of(kids("chromium")); w1 = cpu_of(w); s1 = studio.get_run(run_id)["step"]
    steps[label] = s1 - s0
    print(f"{label}: server {r1.ru_utime+r1.ru_stime-r0.ru_utime-r0.ru_stime:.1f} s cpu, chromium {c1-c0:.1f} s, worker {w1-w0:.1f} s, steps {s1-s0} in {time.time()-t0:.0f} s", flush=True)
sample("no page")
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}"); page.wait_for_selector("#run-status")
    time.sleep(5)
    sample("page open (Train tab), first 30 s")
    sample("page open, next 30 s")
    page.get_by_role("tab", name="Data").click(); time.sleep(3)
    sample("page open on the Data tab")
    b.close()
sample("page closed")
studio.cancel(run_id); studio.wait(run_id)
app.close()
base = max(steps["no page"], 1)
print(f"training steps with the page open / without (baseline): "
      f"{steps['page open, next 30 s'] / base:.2f}x on the Train tab, {steps['page open on the Data tab'] / base:.2f}x on the Data tab")

// The quick start with the official OpenAI Node SDK: create a video through the
// gateway (only baseURL and apiKey differ from talking to the provider), poll it,
// download it.
//   cd tests/sdk && npm ci && KEY=sk-vgw-... node demo.mjs [image.png]
import fs from "node:fs";
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: (process.env.BASE_URL || "http://127.0.0.1:8080") + "/v1",
  apiKey: process.env.KEY,
});
const image = process.argv[2];
const job = await client.videos.create({
  model: "veo3.1",
  prompt: "让牛快乐的跳科目三",
  seconds: "8",
  size: "16x9",
  ...(image ? { input_reference: fs.createReadStream(image) } : {}),
});
console.log("created", job.id, job.status, "model sent upstream:", job.model);
let v = job;
while (v.status !== "completed" && v.status !== "failed") {
  await new Promise((r) => setTimeout(r, 1000));
  v = await client.videos.retrieve(job.id);
  console.log("status", v.status, v.progress);
}
const content = await client.videos.downloadContent(job.id);
const bytes = Buffer.from(await content.arrayBuffer());
fs.writeFileSync("video.mp4", bytes);
console.log("downloaded video.mp4,", bytes.length, "bytes");

import vue from "@vitejs/plugin-vue";
import { defineConfig } from "vite";

// base "./": the built files work from any path (the browser test serves them as they are)
export default defineConfig({ base: "./", plugins: [vue()] });
